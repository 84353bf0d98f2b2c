"""TFDS text datasets as a pretraining corpus (`data.corpus='tfds:NAME[/CONFIG][:SPLIT]'`).

Kept apart from corpus.py so that TFDS is imported only when such a corpus is asked for; the
'tfds:' spec reaches TfdsCorpus through corpus.register_kind at the end of this module. The
dataset must be prepared beforehand in the TFDS data dir: nothing is downloaded here.
"""
from __future__ import annotations

from typing import Iterator

from bertjax.data import corpus
from bertjax.data.corpus import Corpus, Document, ReadStats, Unit, decode_text


class TfdsCorpus(Corpus):
    """A TFDS dataset's text feature; paragraphs are its non-empty lines.

    Datasets stored as array_record are read by random access (no TensorFlow needed) and cut
    into index ranges for parallel workers; other formats are read sequentially through
    `as_dataset`, which needs TensorFlow.
    """
    records_per_unit = 20_000

    def __init__(self, name_spec: str, data_dir: str = ""):
        name, _, split = name_spec.partition(":")
        self.name, self.split = name, split or "train"
        self.data_dir = data_dir or None
        self.description = f"tfds:{self.name}:{self.split}"
        import tensorflow_datasets as tfds
        try:
            builder = tfds.builder(self.name, data_dir=self.data_dir)
        except Exception as e:
            # TFDS appends its whole catalogue to the message: keep the first line.
            reason = str(e).strip().split("\n")[0]
            raise ValueError(f"data.corpus='tfds:{name_spec}': TFDS has no dataset "
                             f"{self.name!r} ({reason}); expected a registered TFDS name, e.g. "
                             "'tfds:wikipedia/20230601.en'") from None
        if not builder.is_prepared():
            # Never download here: on a machine without network TFDS retries for minutes, and
            # a corpus download belongs in its own step, not inside a training run.
            raise FileNotFoundError(
                f"data.corpus='tfds:{name_spec}': TFDS dataset {self.name!r} is not prepared in "
                f"{builder.data_dir_root}; download and prepare it once (e.g. `tfds build "
                f"{self.name} --data_dir=DIR --file_format=array_record`) and set "
                "data.tfds_data_dir=DIR")
        if self.split not in builder.info.splits:
            raise ValueError(f"data.corpus='tfds:{name_spec}': no split {self.split!r}; "
                             f"available: {sorted(builder.info.splits)}")
        self.text_key = _text_feature(builder, name_spec)
        self.num_records = builder.info.splits[self.split].num_examples
        self.random_access = builder.info.file_format is not None and \
            builder.info.file_format.value == "array_record"
        self._source = None

    def fingerprint(self) -> dict:
        return {"description": self.description, "num_records": self.num_records}

    def units(self) -> list[Unit]:
        if not self.random_access:
            return [Unit(tfds_range=(0, self.num_records))]
        step = self.records_per_unit
        return [Unit(tfds_range=(a, min(a + step, self.num_records)))
                for a in range(0, self.num_records, step)]

    def read(self, unit: Unit, stats: ReadStats) -> Iterator[Document]:
        import tensorflow_datasets as tfds
        start, stop = unit.tfds_range
        if self.random_access:
            if self._source is None:  # opened lazily: units are read in worker processes
                self._source = tfds.data_source(self.name, split=self.split,
                                                data_dir=self.data_dir, download=False)
            records = (self._source[i] for i in range(start, stop))
        else:
            records = tfds.as_numpy(tfds.load(self.name, split=self.split,
                                              data_dir=self.data_dir, download=False))
        for i, record in zip(range(start, stop), records):
            text = record[self.text_key]
            if isinstance(text, bytes):
                stats.bytes += len(text)
                text = decode_text(text, f"{self.description}[{i}]", stats)
            else:
                stats.bytes += len(text.encode("utf-8"))
            yield Document(f"{self.description}:{i}",
                           [p.strip() for p in text.split("\n") if p.strip()])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None  # file handles do not cross process boundaries
        return state


def _text_feature(builder, name_spec: str) -> str:
    import tensorflow_datasets as tfds
    features = builder.info.features
    if "text" in features:
        return "text"
    texts = [k for k, v in features.items() if isinstance(v, tfds.features.Text)]
    if len(texts) == 1:
        return texts[0]
    raise ValueError(f"data.corpus='tfds:{name_spec}': expected a 'text' feature (or exactly one "
                     f"Text feature); found features {list(features)}")


corpus.register_kind("tfds:", lambda rest, tfds_data_dir="", **_: TfdsCorpus(
    rest, data_dir=tfds_data_dir))  # TFDS itself is imported only when such a corpus opens
