"""Studies: scripts that run experiments with the library and write figures and tables to docs/.

Nothing in the library imports them. `short_horizon`: the short-horizon bias of online
hyperparameter tuning on the noisy quadratic model and an MLP.
"""
