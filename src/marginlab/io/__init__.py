"""Files and pages: atomic storage (JSON, JSONL, no pickle), the environment record, PNG plots
and report rendering. Knows no model, training run or experiment."""
