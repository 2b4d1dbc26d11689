"""MongoDB as a source (`source.py`) and a restore target (`target.py`), moving raw BSON as
mongodump writes it: one point in time through the oplog (`oplog.py`), documents in and out
(`writer.py`), collection metadata (`metadata.py`), and what both sides share (`connection.py`)."""
