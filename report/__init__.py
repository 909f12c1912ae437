"""The report: tables of reproduced numbers beside the reported ones, generated from run records."""
