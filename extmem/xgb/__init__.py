"""XGBoost glue: blocks -> pages -> ``xgboost.DataIter`` -> external-memory or in-memory quantile matrices, and their caches."""
