"""Tests of the read side: views, the runner, rebuilds, the Event Log."""
