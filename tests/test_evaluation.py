import numpy as np

import keras_transfer


def test_report_and_confusion_matrix_match_the_predictions(mnist, tmp_path):
    model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    keras_transfer.train(model, (mnist.x[:1000], mnist.y[:1000]), epochs=2, verbose=0)
    test = (mnist.x[4000:], mnist.y[4000:])
    result = keras_transfer.evaluate_classifier(model, test, class_names=[f"d{i}" for i in range(10)])
    predicted = model.predict(test[0], verbose=0).argmax(-1)
    assert result.accuracy == np.mean(predicted == test[1])
    assert result.confusion_matrix.sum() == 1000
    assert np.trace(result.confusion_matrix) == int(round(result.accuracy * 1000))
    assert "d7" in result.report and abs(result.report_dict["accuracy"] - result.accuracy) < 1e-9
    dataset = keras_transfer.data.make_dataset(*test, batch_size=100)
    assert keras_transfer.evaluate_classifier(model, dataset).accuracy == result.accuracy

    cm = keras_transfer.plot_confusion_matrix(result, str(tmp_path / "cm.png"), normalize=True)
    history = keras_transfer.train(model, (mnist.x[:200], mnist.y[:200]), test, epochs=2, verbose=0)
    curves = keras_transfer.plot_history(history, str(tmp_path / "plots" / "curves.png"))
    for path in (cm, curves):
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_class_name_count_must_match():
    import pytest

    model = keras_transfer.build_classifier("mnist_mlp", 3, weights=None)
    with pytest.raises(ValueError, match="3 classes but 2 class names"):
        keras_transfer.evaluate_classifier(
            model, (np.zeros((2, 28, 28, 1)), np.zeros(2)), class_names=["a", "b"]
        )


def test_predict_classes_on_arrays_equals_model_predict_for_any_input_rank():
    # Arrays go through one of the toolkit's pipelines (batches of unknown size, so the
    # last partial batch does not retrace); the classes equal model.predict's, and a
    # model that takes feature vectors (not images) works too.
    import keras

    from keras_transfer import evaluation

    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 6)).astype("float32"), rng.integers(0, 3, 300)
    y_true, y_pred = evaluation.predict_classes(model, (x, y), batch_size=128)
    np.testing.assert_array_equal(y_true, y)
    np.testing.assert_array_equal(y_pred, np.argmax(model.predict(x, verbose=0), axis=-1))
    assert len(set(y_pred.tolist())) > 1
