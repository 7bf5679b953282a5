"""Training runs: the XGBoost, incremental and distributed trainers, their callbacks, reports and estimators."""
