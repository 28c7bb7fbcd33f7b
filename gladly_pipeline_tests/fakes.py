"""Stand-ins shared by the extraction tests."""


class ExportFiles:
    """Stands in for the client: daily jobs of 2026-03-08 (later ones updated later)
    whose item files hold the given lines (one list of lines per job id)."""

    def __init__(self, files: dict):
        self.files = files

    def export_jobs(self, status=None):
        return [
            {
                "id": job_id,
                "status": "COMPLETED",
                "updatedAt": f"2026-03-09T0{n}:00:00.000Z",
                "parameters": {
                    "startAt": "2026-03-08T00:00:00Z", "endAt": "2026-03-09T00:00:00Z",
                },
                "files": ["conversation_items.jsonl"],
            }
            for n, job_id in enumerate(self.files, start=1)
        ]

    def export_file_lines(self, job_id, filename):
        yield from self.files[job_id]
