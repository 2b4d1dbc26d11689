"""Pure model of snapledger: aggregates, events, value objects and the Application."""
