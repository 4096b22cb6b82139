"""The only code that talks to LanceDB / Arrow."""

from storage.schemas import TABLES, TableSpec, table_spec, tensor_fields
from storage.sql import sql_and, sql_eq, sql_in, sql_literal
from storage.store import Store

__all__ = ["TABLES", "Store", "TableSpec", "sql_and", "sql_eq", "sql_in", "sql_literal", "table_spec", "tensor_fields"]
