"""wsrl-mjx: WSRL (warm-start RL) fine-tuning with MJX environments, many seeds per program.

Importing it (or any module in it) changes no global state: the workarounds for the pinned JAX
and Brax versions are in `compat`, applied by explicit calls (launch/runtime.py's `configure()`
sets XLA's CPU flag before JAX starts a backend).
"""
