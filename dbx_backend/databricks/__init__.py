"""Everything that speaks the Databricks SQL Statement Execution API 2.0."""
