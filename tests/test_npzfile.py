"""npzfile.npz_bytes: an uncompressed .npz that np.load (and any zip reader) reads exactly as np.savez's."""

import io
import zipfile

import numpy as np
import pytest

from gradscope.npzfile import npz_bytes


def arrays():
    rng = np.random.default_rng(3)
    return {
        "h_norm": rng.normal(size=(4, 2, 7)).astype(np.float32),  # (K, S, T)
        "loss": np.array([1.5, np.nan, np.inf, -np.inf]),
        "iteration": np.arange(4, dtype=np.int64),
        "streams": np.array(["layer0", "encoder.layer0_reverse"]),
        "mask": rng.random((3, 2)) > 0.5,
        "fortran": np.asfortranarray(rng.normal(size=(5, 3))),
        "strided": rng.normal(size=(6, 6))[::2, 1::2],
        "scalar": np.float64(2.25),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "big-endian": np.arange(3, dtype=">f8"),
        "layer0.W_hh": rng.normal(size=(3, 3)),
        "naïve ключ": np.array([1, 2], dtype=np.uint8),
    }


def load(data: bytes) -> dict:
    with np.load(io.BytesIO(data)) as npz:
        return {key: npz[key] for key in npz.files}


def test_np_load_reads_every_array_as_np_savez_writes_it():
    given = arrays()
    savez = io.BytesIO()
    np.savez(savez, **given)
    ours, theirs = load(npz_bytes(given)), load(savez.getvalue())
    assert list(ours) == list(given) == list(theirs)  # the same keys, in order
    for key, expected in theirs.items():
        got = ours[key]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        assert got.flags.f_contiguous == expected.flags.f_contiguous, key
        assert got.tobytes() == expected.tobytes(), key  # bit for bit, NaN and Inf included


def test_every_member_is_a_stored_npy_file_with_a_valid_crc():
    with zipfile.ZipFile(io.BytesIO(npz_bytes(arrays()))) as archive:
        assert archive.testzip() is None  # every member's CRC checks
        infos = archive.infolist()
        assert [i.filename for i in infos] == [f"{key}.npy" for key in arrays()]
        assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}  # as np.savez: not deflated
        member = archive.read("h_norm.npy")
    assert np.array_equal(np.load(io.BytesIO(member)), arrays()["h_norm"])


def test_an_empty_archive_and_object_arrays_still_load():
    assert load(npz_bytes({})) == {}
    ragged = np.empty(2, dtype=object)
    ragged[:] = [[1, 2], [3]]
    with pytest.raises(ValueError, match="allow_pickle"):  # np.savez's file: objects need allow_pickle
        load(npz_bytes({"ragged": ragged}))
    with np.load(io.BytesIO(npz_bytes({"ragged": ragged})), allow_pickle=True) as npz:
        assert npz["ragged"].tolist() == [[1, 2], [3]]
