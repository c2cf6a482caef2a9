"""The exported SavedModel's signatures, used the way a serving client would: without virtual_ihc."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from virtual_ihc.config import GeneratorConfig
from virtual_ihc.export import METADATA_PATH, export_saved_model, model_metadata, read_model_metadata
from virtual_ihc.inference.model import StainModel
from virtual_ihc.models import build_resnet_generator

CLIENT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf

    model = tf.saved_model.load(sys.argv[1])
    serve, encoded = model.signatures["serving_default"], model.signatures["serve_encoded"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 21, 30, 3), dtype=np.uint8)
    out = serve(images=tf.constant(images))["images"]
    pngs = [tf.io.encode_png(image).numpy() for image in images]
    stained = [tf.io.decode_png(data).numpy() for data in encoded(image_bytes=tf.constant(pngs))["png_bytes"].numpy()]
    grey = tf.io.encode_png(images[0, :, :, :1]).numpy()
    rgba = tf.io.encode_png(np.concatenate([images[0], np.full((21, 30, 1), 255, np.uint8)], -1)).numpy()
    jpeg = tf.io.encode_jpeg(images[0]).numpy()
    mixed = encoded(image_bytes=tf.constant([grey, rgba, jpeg, pngs[1]]))["png_bytes"].numpy()

    def error(call):
        try:
            call()
        except tf.errors.InvalidArgumentError as failure:
            return failure.message
        return None

    print(json.dumps({
        "shape": out.shape.as_list(), "dtype": out.dtype.name,
        "encoded_equals_default": all(np.array_equal(a, b) for a, b in zip(stained, out.numpy())),
        "mixed_shapes": [list(tf.io.decode_png(data).shape) for data in mixed],
        "float": error(lambda: serve(images=tf.zeros((1, 16, 16, 3)))),
        "rank3": error(lambda: serve(images=tf.zeros((16, 16, 3), tf.uint8))),
        "channels4": error(lambda: serve(images=tf.zeros((1, 16, 16, 4), tf.uint8))),
        "too_small": error(lambda: serve(images=tf.zeros((1, 7, 16, 3), tf.uint8))),
        "garbage": error(lambda: encoded(image_bytes=tf.constant([b"not an image"]))),
        "virtual_ihc_imported": any(name.startswith("virtual_ihc") for name in sys.modules),
    }))
''')


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    generator = build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1))
    metadata = model_metadata("he_to_ki67", tile_size=288, mpp=0.5)
    return export_saved_model(generator, tmp_path_factory.mktemp("export") / "he_to_ki67", metadata)


@pytest.fixture(scope="module")
def client_report(export_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("client")
    script = folder / "client.py"
    script.write_text(CLIENT)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, str(script), str(export_dir)], cwd=folder, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_client_never_imports_virtual_ihc(client_report):
    assert client_report["virtual_ihc_imported"] is False


@pytest.mark.slow
def test_serving_default_keeps_size_and_dtype_for_non_multiples_of_8(client_report):
    assert client_report["shape"] == [2, 21, 30, 3] and client_report["dtype"] == "uint8"


@pytest.mark.slow
def test_serve_encoded_returns_the_same_pixels_as_png(client_report):
    assert client_report["encoded_equals_default"] is True


@pytest.mark.slow
def test_serve_encoded_accepts_grey_rgba_and_jpeg(client_report):
    assert client_report["mixed_shapes"] == [[21, 30, 3]] * 4


@pytest.mark.slow
@pytest.mark.parametrize("case, message", [
    ("float", "expected to be a uint8 tensor"),
    ("rank3", "is not compatible with expected shape [?,?,?,3]"),
    ("channels4", "is not compatible with expected shape [?,?,?,3]"),
    ("too_small", "pixels high and wide"),
    ("garbage", "Unknown image file format"),
])
def test_bad_inputs_raise_the_documented_errors(client_report, case, message):
    assert client_report[case] is not None and message in client_report[case]


def test_metadata_is_exported_and_read_by_stain(export_dir):
    assert (export_dir / METADATA_PATH).is_file()
    metadata = read_model_metadata(export_dir)
    assert metadata["tile_size"] == 288 and metadata["size_multiple"] == 8
    assert set(metadata["signatures"]) == {"serving_default", "serve_encoded"}
    assert StainModel(export_dir.parent, "he_to_ki67").mpp == 0.5


def test_exports_without_metadata_read_as_empty(tmp_path):
    assert read_model_metadata(tmp_path) == {}


@pytest.mark.parametrize("downsamplings", [2, 4])
def test_export_follows_the_generators_number_of_downsamplings(tmp_path, downsamplings):
    import numpy as np
    import tensorflow as tf

    from virtual_ihc.export import size_multiple_of

    generator = build_resnet_generator(GeneratorConfig(base_filters=4, num_residual_blocks=1,
                                                       num_downsamplings=downsamplings))
    multiple = 2 ** downsamplings
    assert size_multiple_of(generator) == multiple
    export_dir = export_saved_model(generator, tmp_path / "he_to_ki67", model_metadata("he_to_ki67"))
    metadata = read_model_metadata(export_dir)
    assert (metadata["size_multiple"], metadata["min_size"]) == (multiple, 2 * multiple)
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 2 * multiple + 3, 3), dtype=np.uint8)
    out = serve(images=tf.constant(images))["images"].numpy()
    assert out.shape == images.shape and out.dtype == np.uint8
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"at least {2 * multiple} pixels"):
        serve(images=tf.zeros((1, 2 * multiple - 1, 40, 3), tf.uint8))


def test_an_empty_batch_returns_an_empty_batch(export_dir):
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    out = serve(images=tf.zeros((0, 24, 40, 3), tf.uint8))["images"].numpy()
    assert out.shape == (0, 24, 40, 3) and out.dtype == np.uint8


def test_rest_request_body_carries_the_images_as_tensorflow_serving_reads_them():
    import base64

    import numpy as np

    from virtual_ihc.export import rest_request_body

    pngs = [b"\x89PNG first", b"\x89PNG second"]
    body = json.loads(json.dumps(rest_request_body(pngs)))
    assert body["signature_name"] == "serve_encoded"
    assert [base64.b64decode(instance["b64"]) for instance in body["instances"]] == pngs
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    body = json.loads(json.dumps(rest_request_body(images, "serving_default")))
    np.testing.assert_array_equal(np.array(body["instances"], np.uint8), images)
    with pytest.raises(ValueError, match="uint8"):
        rest_request_body(images.astype(np.float32), "serving_default")
    with pytest.raises(ValueError, match="signature_name"):
        rest_request_body(pngs, "predict")
