"""Neural-network building blocks, the model factory, bandits and lazy tracing."""
