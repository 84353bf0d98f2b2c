"""Entity-level scores against hand-worked numbers (conlleval's chunk rules), and the writer."""
import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from bertjax.finetune.ner import metric


def approx(x):
    return pytest.approx(x, abs=1e-12)


def test_iob1_input():
    # gold: PER(0-1), PER(2) (IOB1's B- separates two adjacent PERs), LOC(4)
    # pred: PER(1), PER(2), LOC(4): PER(2) and LOC(4) correct -> P = R = 2/3.
    gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
    pred = [["O", "I-PER", "B-PER", "O", "I-LOC"]]
    s = metric.entity_scores(gold, pred)
    assert (s["gold_entities"], s["predicted_entities"], s["correct_entities"]) == (3, 3, 2)
    assert s["precision"] == approx(2 / 3) and s["recall"] == approx(2 / 3)
    assert s["f1"] == approx(2 / 3)
    assert (s["PER_precision"], s["PER_recall"], s["PER_f1"], s["PER_support"]) == (
        approx(0.5), approx(0.5), approx(0.5), 2)
    assert (s["LOC_precision"], s["LOC_recall"], s["LOC_support"]) == (1.0, 1.0, 1)


def test_i_without_b_opens_an_entity_as_in_conlleval():
    gold = [["O", "B-ORG", "I-ORG", "O"]]
    pred = [["O", "I-ORG", "I-ORG", "O"]]   # not valid IOB2, but the same span and type
    s = metric.entity_scores(gold, pred)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)
    # seqeval's strict IOB2 mode would drop the predicted entity: the reason it is not used.
    strict = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True,
                                   zero_division=0)
    assert strict["micro avg"]["f1-score"] == 0.0


def test_same_entities_in_iob1_and_iob2_score_the_same():
    iob1_gold = [["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]]
    iob2_gold = [["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG"]]
    iob1_pred = [["I-PER", "O", "I-PER", "O", "I-LOC", "I-LOC"]]
    iob2_pred = [["B-PER", "O", "B-PER", "O", "B-LOC", "I-LOC"]]
    a = metric.entity_scores(iob1_gold, iob1_pred)
    b = metric.entity_scores(iob2_gold, iob2_pred)
    assert a == b
    # gold PER(0-1) PER(2) LOC(4) ORG(5); pred PER(0) PER(2) LOC(4-5): only PER(2) correct.
    assert (a["correct_entities"], a["precision"], a["recall"]) == (1, approx(1 / 3), 0.25)
    assert a["f1"] == approx(2 * (1 / 3) * 0.25 / (1 / 3 + 0.25))


def test_entity_at_sentence_end_does_not_run_into_the_next():
    gold = [["O", "B-LOC"], ["B-LOC", "O"]]
    pred = [["O", "B-LOC"], ["I-LOC", "O"]]  # flattened, pred would be one LOC over 2 words
    s = metric.entity_scores(gold, pred)
    assert (s["gold_entities"], s["predicted_entities"], s["f1"]) == (2, 2, 1.0)
    cut = metric.entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])  # right boundary wrong
    assert (cut["precision"], cut["recall"], cut["f1"]) == (0.0, 0.0, 0.0)


def test_two_adjacent_entities_of_one_type():
    gold = [["B-PER", "B-PER", "O"], ["I-PER", "B-PER"]]   # IOB2 then IOB1: 2 + 2 entities
    pred = [["B-PER", "I-PER", "O"], ["I-PER", "B-PER"]]   # merged (wrong), then right
    s = metric.entity_scores(gold, pred)
    assert (s["gold_entities"], s["predicted_entities"], s["correct_entities"]) == (4, 3, 2)
    assert s["precision"] == approx(2 / 3) and s["recall"] == 0.5
    assert s["f1"] == approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_type_must_match_and_types_from_both_sides():
    s = metric.entity_scores([["B-PER", "O"]], [["B-ORG", "O"]])
    assert s["f1"] == 0.0 and s["ORG_precision"] == 0.0 and s["ORG_support"] == 0
    assert s["PER_recall"] == 0.0 and s["PER_support"] == 1


def test_no_entities_anywhere():
    s = metric.entity_scores([["O", "O"]], [["O", "O"]])
    assert (s["precision"], s["recall"], s["f1"], s["gold_entities"]) == (0.0, 0.0, 0.0, 0)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="sentence 1: 2 gold tags but 1 predicted"):
        metric.entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        metric.entity_scores([["O"], ["O"]], [["O"]])


def test_writer_is_conlleval_format(tmp_path):
    words = [["EU", "rejects"], ["Peter"]]
    gold = [["B-ORG", "O"], ["B-PER"]]
    pred = [["B-ORG", "O"], ["O"]]
    p = metric.write_predictions(tmp_path / "CoNLL-2003" / "predictions_dev.txt", words, gold,
                                 pred)
    assert p.read_text(encoding="utf-8") == ("EU B-ORG B-ORG\nrejects O O\n\n"
                                             "Peter B-PER O\n\n")
    assert [x.name for x in p.parent.iterdir()] == ["predictions_dev.txt"]  # no temp left
    with pytest.raises(ValueError, match="'a b'"):
        metric.write_predictions(tmp_path / "bad.txt", [["a b"]], [["O"]], [["O"]])
    assert not (tmp_path / "bad.txt").exists()
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".")] == []
