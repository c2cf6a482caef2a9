"""The training input: the ``tf.data`` pipeline of two unpaired stain domains, zipped, and the sample data.

- ``index``: what a domain folder holds (tiles, tissue tiles of large images, TFRecord shards);
- ``holdout``: the validation split (whole slides, whole files or a band of each large image);
- ``decode``: one tile or record at a time inside ``tf.data``, bad ones skipped and counted;
- ``stream``: the seeded, resumable training stream (:func:`~virtual_ihc.data.stream.make_train_dataset`);
- ``synthetic``: the procedural H&E / Ki-67 sample data the demo trains on.

How the pipeline works:

Each domain is a folder of tiles or of large images (PNG/JPEG/TIFF). Files are
*indexed* first (headers only for tiles; large images are read once to find the
tissue tiles of a ``tile_size`` grid with ``tile_overlap``), then streamed:

    element k -> (H&E tile index, Ki-67 tile index)   independent permutations per epoch
              -> parallel decode (OpenCV / tifffile; bad files skipped and counted)
              -> random crop, flips, 90-degree rotations   (stateless, seeded by k)
              -> [-1, 1] float32 -> batch (+ k of the batch's last element) -> prefetch

Every random choice is a pure function of ``(seed, k)``: the stream is
reproducible. Each batch carries the element counter ``k`` of its last element;
the model records it, so ``--resume`` restarts the stream right after the last
element trained on, however many tiles the bad-tile filter dropped.
Unpaired: the two domains are permuted independently, so a batch never pairs a
tile with its consecutive section except by chance.

Tiles of a large image are read as regions, never by decoding the whole image
per tile: tiled or stripped TIFFs through OpenSlide / tiffslide, other images
(PNG, JPEG, ...) from a memory-mapped copy of the decoded image written once at
indexing time (``cache_dir``).

A domain folder holding sharded TFRecords (``*.tfrecord``, as written by
``python -m data_prep.tile_slides --format tfrecord``) is streamed instead:
the shard list is shuffled afresh every pass (seeded, each slide's shards
spread evenly over the pass), 16 shards are interleaved record by record, then a seeded shuffle buffer mixes them, so no
slide dominates a stretch of the stream. ``--resume`` replays the serialized
records up to the element where training stopped (without decoding them).
Records that fail to decode are skipped with a warning and counted.

Validation (without validation folders) holds out whole files, whole slides of
TFRecord domains, or, when a domain has too few files for that, a band at the
end of each large image with no tile overlapping a training tile.

Multi-worker training (``--distribute multiworker``) runs one input pipeline per
worker (:func:`~virtual_ihc.data.stream.make_train_dataset` with the strategy's ``InputContext``). Each
pipeline reads its own share of the files (:func:`~virtual_ihc.data.stream.shard_domain`: whole image
files or TFRecord shards, balanced by tile count) as a stream of its own, seeded
and resumable like the single stream. Elements are numbered across pipelines
(local element j of pipeline w of W is element ``j * W + w``), so the recorded
position means "elements consumed in total" whatever the worker count. A domain
with fewer files than workers falls back to splitting the single stream by
element: pipeline w takes elements w, w + W, ... (tile folders and large images
decode only their own elements; TFRecord workers read every record and keep
every W-th).
"""
