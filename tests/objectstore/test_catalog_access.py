"""A listing another daemon left in the bucket never opens a repository the upstream has since closed."""

from __future__ import annotations

from zoo.hubserver.catalog import Catalog
from zoo.store.hub import RemoteFile, RemoteRevision
from zoo.store.writer import Store

COMMIT = "a" * 40


class OldListing:
    """A bucket whose listing of the commit says what the repository was when it was first pulled: public."""

    def remote_revision(self, repo, revision, max_age):
        files = (RemoteFile("config.json", 2, None, "b" * 40),)
        return RemoteRevision(repo, revision, COMMIT, files, "public"), 0.0


def test_an_old_public_listing_in_the_bucket_does_not_open_a_gated_repository(tmp_path):
    store = Store(tmp_path / "home")
    store.central = OldListing()
    catalog = Catalog(store)
    catalog._access["org/m"] = "gated"  # what the upstream said last (a revalidation found it gated)
    remote = catalog._from_central("org/m", COMMIT)
    assert remote is not None and remote.commit == COMMIT
    assert catalog._access["org/m"] == "gated"
    catalog._access.pop("org/m")  # never asked: the bucket's word is all there is
    catalog._central_misses.clear()
    catalog._from_central("org/m", "main")
    assert catalog._access["org/m"] == "public"
