"""MongoDB as a source (`source.py`) and a restore target (`target.py`), moving raw BSON as
mongodump writes it; what both share is `connection.py`."""
