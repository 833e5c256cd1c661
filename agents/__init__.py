"""The processes of model-canary that talk to Kafka: router, model workers, evaluator, the
client, the command line and the local broker manager."""
