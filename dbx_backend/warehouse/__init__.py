"""The transport: the only package that speaks the Statement Execution API 2.0 wire protocol."""
