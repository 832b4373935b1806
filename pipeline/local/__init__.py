"""The pipeline on one machine, against moto instead of AWS."""
