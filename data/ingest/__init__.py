"""Real logs into worlds: the bring-your-own-logs contract and the dataset adapters.

`python -m data.ingest --source=NAME --input=DIR --world_dir=OUT` converts a source into a
world directory with the simulator's layout and no `truth/` (docs/real_logs.md). Every stage
then trains on OUT unchanged; the replay reports offline metrics only.
"""

from data.ingest.report import IngestError
from data.ingest.report import RowReport
from data.ingest.world_builder import LogTables
from data.ingest.world_builder import write_world

__all__ = ["IngestError", "LogTables", "RowReport", "write_world"]
