"""The data map: the controller's record of processing and where each subject's data lives."""

from dsr.datamap.loader import DataMapError, load, parse
from dsr.datamap.model import Category, DataMap, FieldRule, Recipient, Store, Table, UnsetVariable

__all__ = ["Category", "DataMap", "DataMapError", "FieldRule", "Recipient", "Store", "Table", "UnsetVariable", "load",
           "parse"]
