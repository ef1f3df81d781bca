"""Make-believe data for the demo and the benchmarks: the business API portal of the seed notice."""
