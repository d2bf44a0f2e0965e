"""``sohoa train``: a new classifier version from what operators confirmed or corrected.

The training pages are read from the archived manifests alone (each page's OCR text, labelled
with the type of the document it belongs to, for documents that carry an operator ``review``),
so a model can be rebuilt from the archive at any time. With too little data nothing is
written and classification stays with the rules.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from sohoa.domain import index as reuse_index
from sohoa.domain import layout
from sohoa.domain import model as classifier
from sohoa.domain.index import Unreadable
from sohoa.domain.catalog import taxonomy
from sohoa.kernel.models import Manifest
from sohoa.kernel.settings import Settings
from sohoa.storage import Store


class Harvest(BaseModel):
    examples: list[classifier.Example]
    dossiers: int
    reviewed_documents: int
    skipped_types: dict[str, int]  # reviewed with a type the taxonomy no longer has
    unreadable: list[Unreadable] = []  # manifests that cannot be read: left out, each logged


def harvest(store: Store, codes: set[str], progress: Callable[[str], None] = lambda _: None) -> Harvest:
    examples: list[classifier.Example] = []
    dossiers = reviewed = 0
    skipped: dict[str, int] = {}
    unreadable: list[Unreadable] = []
    keys = layout.manifest_keys(store)
    for count, key in enumerate(keys, start=1):
        manifest = reuse_index.read_manifest(store, key)
        if count % 500 == 0:
            progress(f"read {count}/{len(keys)} manifests")
        if isinstance(manifest, Unreadable):  # logged as a warning (on stderr from the CLI)
            unreadable.append(manifest)
        if not isinstance(manifest, Manifest):
            continue
        texts = {page.n: page.text for page in manifest.pages if not page.blank}
        documents = [d for d in manifest.documents if d.review is not None]
        dossiers += bool(documents)
        for document in documents:
            if document.type not in codes:
                skipped[document.type] = skipped.get(document.type, 0) + 1
                continue
            reviewed += 1
            examples += [classifier.Example(text=texts[n], label=document.type, dossier=manifest.dossier_id)
                         for n in document.pages if texts.get(n, "").strip()]
    return Harvest(examples=examples, dossiers=dossiers, reviewed_documents=reviewed, skipped_types=skipped,
                   unreadable=unreadable)


def train(store: Store, settings: Settings, progress: Callable[[str], None] = lambda _: None
          ) -> tuple[classifier.ModelRef, classifier.ClassifierModel, Harvest]:
    """Train and store the next version; TooLittleData (nothing written) when there is not enough."""
    tax = taxonomy(settings.taxonomy)
    found = harvest(store, tax.codes(), progress)
    progress(f"{len(found.examples)} pages of {found.reviewed_documents} reviewed documents in {found.dossiers} dossiers")
    latest = classifier.newest(store)
    model = classifier.train(found.examples, version=(latest.version + 1) if latest else 1, taxonomy_digest=tax.digest)
    return classifier.save(store, model), model, found
