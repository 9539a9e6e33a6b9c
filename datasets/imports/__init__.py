"""Importing examples from uploaded files: the submission and the import itself (`services`),
the upload and progress pages (`views`) and the reaper that ends imports whose worker died
(`reaper`). The file formats they read are `datasets.formats` and `datasets.jsonl`, shared
with export."""
