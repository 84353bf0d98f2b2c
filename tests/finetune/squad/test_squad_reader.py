"""SQuAD reader: the official layout, all references kept, and every bad-input case."""
import pytest
from squad_fixtures import CONTEXT_A, v1_raw, v2_raw, write

from bertjax.finetune.squad import reader


def test_reads_v1_with_every_reference(tmp_path):
    f = reader.read(write(tmp_path / "dev-v1.1.json", v1_raw()), v2=False, training=False)
    assert [e.id for e in f.examples] == ["q1", "q2", "q3"] and not f.v2 and f.version == "1.1"
    q1 = f.examples[0]
    assert q1.title == "Super_Bowl_50" and q1.context == CONTEXT_A
    assert q1.question == "Who won Super Bowl 50?" and not q1.is_impossible
    assert q1.answers == (reader.Answer("The Broncos", 0), reader.Answer("Broncos", 4),
                          reader.Answer("Broncos", 4))
    assert f.skipped_ids == [] and f.num_skipped == 0


def test_reads_v2_unanswerable_questions(tmp_path):
    f = reader.read(write(tmp_path / "dev-v2.0.json", v2_raw()), v2=True, training=True)
    assert [(e.id, e.is_impossible, len(e.answers)) for e in f.examples] == [
        ("q1", False, 3), ("q2", False, 1), ("q3", False, 1), ("q4", True, 0)]


def _break(raw, path, key):
    obj = raw
    for step in path:
        obj = obj[step]
    del obj[key]
    return raw


@pytest.mark.parametrize("path, key, message", [
    (["data", 1, "paragraphs", 0, "qas", 0], "answers", "data[1].paragraphs[0].qas[0]: "
                                                        "missing 'answers'"),
    (["data", 0, "paragraphs", 0], "context", "data[0].paragraphs[0]: missing 'context'"),
    (["data", 0, "paragraphs", 0, "qas", 1], "id", "data[0].paragraphs[0].qas[1]: missing 'id'"),
    (["data", 0, "paragraphs", 0, "qas", 0, "answers", 2], "answer_start",
     "data[0].paragraphs[0].qas[0].answers[2]: missing 'answer_start'"),
    (["data", 1], "paragraphs", "data[1]: missing 'paragraphs'"),
    ([], "data", "missing 'data'"),
])
def test_layout_errors_name_the_key_and_where(tmp_path, path, key, message):
    f = write(tmp_path / "dev-v1.1.json", _break(v1_raw(), path, key))
    with pytest.raises(reader.SquadFormatError) as e:
        reader.read(f, v2=False, training=False)
    assert str(e.value) == f"{f}: {message}"


def test_wrong_types_and_other_bad_files(tmp_path):
    raw = v1_raw()
    raw["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = "12"
    with pytest.raises(reader.SquadFormatError, match=r"qas\[1\]\.answers\[0\]\.answer_start: "
                                                      "expected an integer, got str '12'"):
        reader.read(write(tmp_path / "a.json", raw), v2=False, training=False)
    raw = v1_raw()
    raw["data"][1]["paragraphs"][0]["qas"][0]["id"] = "q1"
    with pytest.raises(reader.SquadFormatError, match=r"data\[1\]\.paragraphs\[0\]\.qas\[0\]: "
                                                      "id 'q1' repeats the id of data\\[0\\]"):
        reader.read(write(tmp_path / "b.json", raw), v2=False, training=False)
    (tmp_path / "c.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(reader.SquadFormatError, match="c.json: not a JSON file"):
        reader.read(tmp_path / "c.json", v2=False, training=False)
    with pytest.raises(reader.SquadFormatError, match=r"d.json: expected an object with 'data'"):
        reader.read(write(tmp_path / "d.json", [1, 2]), v2=False, training=False)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        reader.read(tmp_path / "nowhere.json", v2=False, training=False)


def test_unanswerable_in_v1_and_answers_on_an_impossible_question(tmp_path):
    raw = v1_raw()
    raw["data"][0]["paragraphs"][0]["qas"][1]["answers"] = []
    with pytest.raises(reader.SquadFormatError, match=r"qas\[1\]: 'answers' is empty.*v1\.1"):
        reader.read(write(tmp_path / "a.json", raw), v2=False, training=False)
    raw = v2_raw()
    raw["data"][1]["paragraphs"][0]["qas"][1]["answers"] = [{"text": "x", "answer_start": 0}]
    with pytest.raises(reader.SquadFormatError, match=r"qas\[1\]: 'is_impossible' is true but "
                                                      "'answers' lists 1 answers"):
        reader.read(write(tmp_path / "b.json", raw), v2=True, training=False)


def test_answer_not_at_its_offset_is_skipped_at_train_and_kept_at_dev(tmp_path):
    raw = v1_raw()
    raw["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 3  # not there
    raw["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 10_000
    path = write(tmp_path / "train-v1.1.json", raw)
    train = reader.read(path, v2=False, training=True)
    assert [e.id for e in train.examples] == ["q1"]
    assert train.skipped_ids == ["q2", "q3"] and train.num_skipped == 2
    dev = reader.read(path, v2=False, training=False)
    assert [e.id for e in dev.examples] == ["q1", "q2", "q3"] and dev.skipped_ids == []
    assert dev.examples[1].answers == (reader.Answer("Santa Clara", 3),)  # scored by its text


def test_v1_and_v2_files_given_to_the_other_task(tmp_path):
    v2_file = write(tmp_path / "dev-v2.0.json", v2_raw())
    with pytest.raises(reader.SquadFormatError, match=r"dev-v2.0.json is a SQuAD v2.0 file.*"
                                                      "Use task SQuAD-v2 for it"):
        reader.read(v2_file, v2=False, training=False)
    v1_file = write(tmp_path / "dev-v1.1.json", v1_raw())
    with pytest.raises(reader.SquadFormatError, match=r"dev-v1.1.json is a SQuAD v1.1 file.*"
                                                      "Use task SQuAD for it"):
        reader.read(v1_file, v2=True, training=True)


@pytest.mark.shared_data
def test_real_dev_files(shared_data):
    v1 = reader.read(shared_data / "squad" / "dev-v1.1-articles-00-09.json", v2=False,
                     training=False)
    assert len(v1.examples) == 3036 and len({e.title for e in v1.examples}) == 10
    assert max(len(e.answers) for e in v1.examples) >= 3  # every reference kept
    assert all(reader.answer_found(e.context, a) for e in v1.examples for a in e.answers)
    v2 = reader.read(shared_data / "squad" / "dev-v2.0-sample.json", v2=True, training=False)
    assert len(v2.examples) == 1407 and sum(e.is_impossible for e in v2.examples) == 702
