"""The model worker: consumes inference requests, runs a model in micro-batches through an
adapter (:mod:`model_canary.agents.worker.adapters`) and publishes the results."""
