"""Support for the tests and the benchmarks (as ``optuna.testing``): real servers started on
loopback (``services``), service processes (``processes``), tiny and materialized models
(``models``) and stored sweeps (``sweeps``). Nothing in the service imports it."""
