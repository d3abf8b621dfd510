"""The object-store tests share one real SeaweedFS (``weed mini`` on loopback) for the session."""

from s3server import s3, s3_bucket, s3_env  # noqa: F401
