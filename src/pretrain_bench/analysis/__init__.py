"""From records and specs to answers: no torch."""
