"""Tests of the model: aggregates, values, schedules and the Application's commands."""
