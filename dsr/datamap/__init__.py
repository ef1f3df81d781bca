"""The data map: the controller's record of processing and where each subject's data lives."""

from dsr.datamap.loader import DataMap, DataMapError, SqlTable, Store, load

__all__ = ["DataMap", "DataMapError", "SqlTable", "Store", "load"]
