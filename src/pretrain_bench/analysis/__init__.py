"""From records and specs to answers: the record schema, estimates, tables, plots, exports, reproduce, numerics and
peers. No torch."""
