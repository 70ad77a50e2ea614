"""On-disk image formats: what a file's header announces, and the check that every announced voxel byte is there.

ITK fills the missing voxels of a short NIfTI or Analyze file with zeros without a word (also a .nii.gz that is
not compressed), half-reads compressed MetaImage data, cannot open gzip NIfTI whose name does not end in .gz, nor
NIfTI-2, and fails on a short or missing MetaImage/NRRD data file with a message that names neither. This module
recognises the format from the content and hands ITK only what it reads correctly (`itk_read`);
voxflow.inputs.images builds the subject-level checks on it.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk

from voxflow.errors import InputError


def orthonormal(direction: np.ndarray, tol: float = 1e-3) -> bool:
    return bool(np.allclose(direction @ direction.T, np.eye(direction.shape[0]), atol=tol))


# --- the voxel data that a header announces ------------------------------------------------------------------------
#
# ITK fills the missing voxels of a short NIfTI or Analyze file with zeros without a word (also a .nii.gz that is
# not compressed), half-reads compressed MetaImage data (zeros again, when CompressedDataSize is absent or the
# stream is damaged), cannot open gzip NIfTI whose name does not end in .gz, nor NIfTI-2, and fails on a short or
# missing MetaImage/NRRD data file with a message that names neither. So the format is recognised from the content
# (gzip by its magic bytes 1f 8b, whatever the name), and every voxel byte that the header announces must be there,
# in the file itself or in the data file that it names (.img of a .hdr, ElementDataFile, NRRD `data file`).

_NIFTI = ("nifti1", "nifti2", "analyze")
_MET_TYPES = {"MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_INT": "i4",
              "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4", "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8",
              "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}  # MET_LONG is 32-bit in ITK's MetaIO
_NRRD_SIZES = {1: "signed char,int8,int8_t,uchar,unsigned char,uint8,uint8_t",
               2: "short,short int,signed short,signed short int,int16,int16_t,ushort,unsigned short,"
                  "unsigned short int,uint16,uint16_t",
               4: "int,signed int,int32,int32_t,uint,unsigned int,uint32,uint32_t,float",
               8: "longlong,long long,long long int,signed long long,signed long long int,int64,int64_t,ulonglong,"
                  "unsigned long long,unsigned long long int,uint64,uint64_t,double"}
_NRRD_TYPES = {t: n for n, names in _NRRD_SIZES.items() for t in names.split(",")}
_NRRD_CODECS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}
# NIfTI-2 fields that a NIfTI-1 header holds too (geometry, data type, scaling): what ITK reads
_NIFTI2_FIELDS = ("dim_info", "dim", "intent_p1", "intent_p2", "intent_p3", "intent_code", "datatype", "bitpix",
                  "pixdim", "scl_slope", "scl_inter", "xyzt_units", "cal_max", "cal_min", "qform_code", "sform_code",
                  "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y",
                  "srow_z", "descrip", "intent_name")


class _Data(NamedTuple):
    """Where the voxel bytes that a header announces are stored."""

    file: Path  # the file holding them: the one given, or the data file that its header names
    start: int  # where the stored (maybe compressed) data starts in `file`
    offset: int  # bytes before the voxels in the decoded data (NIfTI: vox_offset, the header when in one file)
    nbytes: int  # voxel bytes announced
    codec: str  # "raw", "gzip", "zlib" (MetaImage: zlib or gzip stream) or "bzip2"
    limit: int | None = None  # compressed bytes announced (MetaImage's CompressedDataSize)


class _Layout(NamedTuple):
    """A file's format as recognised from its content, and what its header announces."""

    kind: str  # "nifti1", "nifti2", "analyze", "nrrd" or "meta"
    data: _Data | None  # None: not checked here (an encoding, a data file list or a type left to ITK)
    dtype: np.dtype | None = None  # voxel type with its byte order
    shape: tuple = ()  # voxels, slowest axis first (MetaImage: channels last)
    header: Any = None  # the nibabel header (NIfTI kinds)
    gz: bool = False  # the file given is gzip (NIfTI in one file)
    single: bool = True  # NIfTI in one file (magic n+1 / n+2), not a .hdr/.img pair


def _is_gzip(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _head(p: Path, n: int) -> tuple[bytes, bool]:
    """Up to n bytes of the file's content, decompressed when it is gzip (recognised by its magic bytes,
    not its name), and whether it is gzip. A damaged gzip stream gives what decodes before the damage."""
    with open(p, "rb") as f:
        start = f.read(n)
    if start[:2] != b"\x1f\x8b":
        return start, False
    parts: list[bytes] = []
    try:
        with gzip.open(p, "rb") as f:
            while sum(map(len, parts)) < n and (chunk := f.read(64)):
                parts.append(chunk)
    except (EOFError, OSError, zlib.error):
        pass
    return b"".join(parts)[:n], True


def _sibling(p: Path, pairs: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[Path | None, Path | None]:
    """(existing, expected) file of an Analyze/NIfTI pair: ('.hdr', ('.img', '.img.gz')) maps t1.hdr to t1.img,
    or t1.img.gz when that is the one present. Upper-case names keep upper case."""
    name = p.name
    for suffix, exts in pairs:
        if name.lower().endswith(suffix):
            stem, upper = name[: -len(suffix)], name[-len(suffix):].isupper()
            cands = [p.with_name(stem + (e.upper() if upper else e)) for e in exts]
            return next((c for c in cands if c.exists()), None), cands[0]
    return None, None


def _layout(p: Path, subject: str, what: str, check: bool = True) -> _Layout | None:
    """The format of file p from its content, or None (ITK decides); check: raise on NIfTI header problems."""
    given = p
    if p.name.lower().endswith((".img", ".img.gz")):  # ITK reads a pair through its header
        header_file = _sibling(p, ((".img", (".hdr", ".hdr.gz")), (".img.gz", (".hdr", ".hdr.gz"))))[0]
        if header_file is None:
            return None
        p = header_file
    head, gz = _head(p, 544)
    if len(head) >= 348:
        for order in "<>":
            size = struct.unpack(order + "i", head[:4])[0]
            if size in (348, 540):
                return _nifti_layout(given, p, head, gz, subject, what, check)
    if gz:
        return None
    if head.startswith(b"NRRD"):
        if check:
            _check_text_spacing(p, "nrrd", subject, given, what)
        return _nrrd_layout(p)
    if p.name.lower().endswith((".mha", ".mhd")) or head.lstrip().startswith((b"ObjectType", b"NDims")):
        if check:
            _check_text_spacing(p, "meta", subject, given, what)
        return _meta_layout(p)
    return None


def _floats(text: str | None) -> list[float] | None:
    try:
        return [float(v) for v in text.replace("(", " ").replace(")", " ").replace(",", " ").split()] if text else None
    except ValueError:
        return None


def _check_text_spacing(p: Path, kind: str, subject: str, given: Path, what: str) -> None:
    """ITK's MetaImage reader takes a zero or negative ElementSpacing as it is or as 1 mm, and its NRRD reader a
    zero `spacings` or a zero `space directions` vector, where the header itself is broken: refused, as a NIfTI
    pixdim of 0 is (the header field named)."""
    fields, _ = _text_header(p, last="ElementDataFile" if kind == "meta" else None)
    if kind == "meta":
        key = "ElementSpacing" if "ElementSpacing" in fields else "ElementSize"
        spacing = _floats(fields.get(key))
    elif "space directions" in fields:
        key = "space directions"
        vectors = [v for v in fields[key].split(")") if v.strip() and "none" not in v.lower()]
        spacing = [float(np.linalg.norm(_floats(v) or [np.nan])) for v in vectors] or None
    else:
        key = "spacings"
        spacing = [v for v in _floats(fields.get(key)) or [] if not np.isnan(v)] or None  # nan: a non-spatial axis
    if spacing and (not np.all(np.isfinite(spacing)) or min(spacing) <= 0):
        shown = tuple(round(float(v), 4) for v in spacing)
        raise InputError(subject, given, f"{what} has invalid voxel spacing {shown} ({key} in the "
                                          f"{'MetaImage' if kind == 'meta' else 'NRRD'} header)")


def _nifti_layout(given: Path, p: Path, head: bytes, gz: bool, subject: str, what: str, check: bool) -> _Layout | None:
    """NIfTI-1, NIfTI-2 or Analyze 7.5 (header p; data in p, or in the .img beside it). Raw header checks that
    ITK skips: it silently replaces a zero pixdim with 1 mm, and falls back on the qform when the sform is sheared
    (while other tools use the sform: the two would disagree about where the voxels are). nibabel would "fix"
    the header too, hence check=False."""
    import nibabel as nib

    two = struct.unpack("<i", head[:4])[0] in (540, 0x1C020000)
    try:
        hdr = (nib.Nifti2Header if two else nib.Nifti1Header).from_fileobj(io.BytesIO(head[:540 if two else 348]),
                                                                           check=False)
    except Exception:  # noqa: BLE001 - not a NIfTI header after all: ITK decides and reports
        return None
    magic = bytes(hdr["magic"]).rstrip(b"\0")
    if two and magic not in (b"n+2", b"ni2"):
        return None
    kind = "nifti2" if two else "nifti1" if magic in (b"n+1", b"ni1") else "analyze"
    ndim = int(hdr["dim"][0])
    if not 1 <= ndim <= 7:
        return None
    shape = tuple(int(d) for d in hdr["dim"][1:1 + ndim])[::-1]
    if check:
        pixdim = np.array(hdr["pixdim"][1:1 + min(ndim, 3)], dtype=np.float64)
        if not np.all(np.isfinite(pixdim)) or np.any(pixdim <= 0):
            raise InputError(subject, given, f"{what} has invalid voxel spacing {tuple(pixdim.round(4).tolist())} "
                                             "(pixdim in the NIfTI header)")
        if kind != "analyze" and int(hdr["sform_code"]) > 0 and ndim >= 3:
            cols = np.array([hdr["srow_x"][:3], hdr["srow_y"][:3], hdr["srow_z"][:3]], dtype=np.float64)
            norms = np.linalg.norm(cols, axis=0)
            if np.all(np.isfinite(cols)) and np.all(norms > 0) and not orthonormal(cols / norms):
                raise InputError(subject, given, f"{what} has non-orthogonal direction cosines in its sform "
                                                 f"{tuple((cols / norms).round(3).ravel().tolist())}")
    single = magic in (b"n+1", b"n+2")
    try:
        dtype = hdr.get_data_dtype()
    except Exception:  # noqa: BLE001 - unknown datatype code: ITK reports it
        return _Layout(kind, None, None, shape, hdr, gz, single)
    nbytes, offset = int(np.prod(shape)) * dtype.itemsize, int(hdr["vox_offset"])
    if single:
        data = _Data(p, 0, max(offset, 540 if two else 348), nbytes, "gzip" if gz else "raw")
    else:
        img, expected = _sibling(p, ((".hdr", (".img", ".img.gz")), (".hdr.gz", (".img.gz", ".img"))))
        if expected is None:  # a pair's header that is not named .hdr: ITK decides
            return _Layout(kind, None, dtype, shape, hdr, gz, single)
        img = img or expected
        codec = "gzip" if _is_gzip(img) else "raw"
        data = _Data(img, 0, max(offset, 0), nbytes, codec)
    return _Layout(kind, data, dtype, shape, hdr, gz, single)


def _text_header(p: Path, last: str | None = None) -> tuple[dict[str, str], int | None]:
    """The fields of a text header (the first 64 KiB of p): `key: value` for NRRD (keys in lower case, the magic
    line skipped) or `key = value` for MetaImage (last: its final field), and where the data would start: after
    the blank line (NRRD) or after the `last` field (None when not found)."""
    with open(p, "rb") as f:
        blob = f.read(1 << 16)
    fields: dict[str, str] = {}
    pos = 0
    for i, line in enumerate(blob.split(b"\n")):
        nxt = pos + len(line) + 1
        text = line.decode("latin-1").rstrip("\r")
        pos = nxt
        if last is None:  # NRRD: magic line, comments, `key: value` fields, `key:=value` pairs; a blank line ends
            if i == 0 or text.startswith("#") or ":=" in text:
                continue
            if not text.strip():
                return fields, min(nxt, len(blob))
            if ": " in text:
                key, value = text.split(": ", 1)
                fields[key.strip().lower()] = value.strip()
        elif "=" in text:
            key, value = (s.strip() for s in text.split("=", 1))
            fields[key] = value
            if key == last:
                return fields, min(nxt, len(blob))
    return fields, None


def _ints(text: str | None) -> list[int] | None:
    try:
        return [int(v) for v in str(text).split()]
    except ValueError:
        return None


def _nrrd_layout(p: Path) -> _Layout | None:
    """NRRD: data after the header's blank line, or in the file that `data file:` (old spelling `datafile:`)
    names, relative to the header's folder. Lists and numbered file patterns are left to ITK."""
    fields, end = _text_header(p)
    sizes, size = _ints(fields.get("sizes")), _NRRD_TYPES.get(" ".join(fields.get("type", "").split()))
    codec = _NRRD_CODECS.get(fields.get("encoding", "").lower())
    skip = _ints(fields.get("byte skip", "0"))
    if not sizes or not size or not codec or not skip:
        return None
    name = fields.get("data file", fields.get("datafile"))
    if name is None:
        if end is None:
            return None
        file, start = p, end
    elif name.startswith("LIST") or len(name.split()) > 1:
        return None
    else:
        file, start = p.parent / name, 0
    skip_bytes = skip[0]
    if skip_bytes < 0:  # -1: the data are the last bytes of the file (raw only)
        skip_bytes = 0
    return _Layout("nrrd", _Data(file, start, skip_bytes, int(np.prod(sizes)) * size, codec), None, tuple(sizes[::-1]))


def _meta_layout(p: Path) -> _Layout | None:
    """MetaImage (.mha, or .mhd with its ElementDataFile; LOCAL = after the header in the same file). Lists,
    file patterns and ASCII data are left to ITK."""
    fields, end = _text_header(p, last="ElementDataFile")
    dims = _ints(fields.get("DimSize"))
    code = _MET_TYPES.get(fields.get("ElementType", ""))
    channels = _ints(fields.get("ElementNumberOfChannels", "1"))
    if end is None or not dims or not code or not channels or fields.get("BinaryData", "True").lower() != "true":
        return None
    name = fields["ElementDataFile"]
    if name.upper() == "LOCAL":
        file, start = p, end
    elif name.upper().startswith("LIST") or len(name.split()) > 1:
        return None
    else:
        file, start = p.parent / name, 0
    msb = (fields.get("BinaryDataByteOrderMSB") or fields.get("ElementByteOrderMSB") or "False").lower() == "true"
    dtype = np.dtype((">" if msb else "<") + code)
    shape = tuple(dims[::-1]) + ((channels[0],) if channels[0] > 1 else ())
    nbytes = int(np.prod(dims)) * channels[0] * dtype.itemsize
    if fields.get("CompressedData", "False").lower() == "true":
        limit = _ints(fields.get("CompressedDataSize"))
        data = _Data(file, start, 0, nbytes, "zlib", limit[0] if limit and limit[0] > 0 else None)
    else:
        header_size = (_ints(fields.get("HeaderSize", "0")) or [0])[0]
        data = _Data(file, start + max(header_size, 0), 0, nbytes, "raw")  # -1: data at the end of the file
    return _Layout("meta", data, dtype, shape)


def _decoded(f, codec: str, limit: int | None) -> Iterator[bytes]:
    """The decoded data of the stream starting at f's position, in chunks (errors: EOFError, OSError, zlib.error)."""
    if codec in ("gzip", "bzip2"):
        with (gzip.GzipFile(fileobj=f, mode="rb") if codec == "gzip" else bz2.BZ2File(f, "rb")) as zf:
            while chunk := zf.read(1 << 22):
                yield chunk
        return
    z, left = zlib.decompressobj(47), limit  # 47: a zlib or a gzip header, as ITK's MetaIO accepts
    while not z.eof and (chunk := f.read(1 << 22 if left is None else min(1 << 22, left))):
        left = None if left is None else left - len(chunk)
        yield z.decompress(chunk)
    yield z.flush()
    if not z.eof:
        raise EOFError("the zlib stream ends before its end-of-stream marker")


def _check_data(lay: _Layout, given: Path, subject: str, what: str, decode: bool, keep: bool) -> bytes | None:
    """Raise unless every voxel byte that the header announces is stored. Without decode only what needs no
    decompression (the data file is there; raw data: its size; compressed: the announced compressed size).
    keep: return the decoded data (compressed formats, decode=True), else None."""
    d = lay.data
    assert d is not None  # callers check the data that the header announces only
    where = f"{what} file" if d.file == given else f"{what} data file {d.file}"
    header = "the NIfTI header" if lay.kind in _NIFTI and lay.single else "the header"
    if d.file != given and not d.file.is_file():
        raise InputError(subject, given, f"{what} data file {d.file} is missing")
    size = d.file.stat().st_size
    if d.codec == "raw":
        need = d.start + d.offset + d.nbytes
        if size < need:
            raise InputError(subject, given, f"{where} is truncated ({size} of the {need} bytes that {header} "
                                             "announces)")
        return None
    if d.limit is not None and size - d.start < d.limit:
        raise InputError(subject, given, f"{where} is truncated ({size - d.start} of the {d.limit} compressed "
                                         f"bytes that {header} announces)")
    if not decode:
        return None
    need, done, parts, error = d.offset + d.nbytes, 0, [], None
    try:  # to the end of the stream, whose checksum (gzip CRC, zlib Adler) then catches damaged data
        with open(d.file, "rb") as f:
            f.seek(d.start)
            for chunk in _decoded(f, d.codec, d.limit):
                done += len(chunk)
                if keep and done - len(chunk) < need:
                    parts.append(chunk)
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        error = exc
    if done < need:
        raise InputError(subject, given, f"{where} is truncated or corrupt (its {d.codec} stream ends before the "
                                         f"{need} bytes that {header} announces)")
    if error is not None:
        raise InputError(subject, given, f"{where} is corrupt (its {d.codec} stream does not decode: "
                                         f"{(str(error).splitlines() or [type(error).__name__])[0][:100]})")
    return b"".join(parts) if keep else None


def _check_finite(lay: _Layout, buf: bytes | None, subject: str, given: Path, what: str) -> None:
    """ITK's NIfTI reader turns NaN/Inf voxels into 0 without a word: count them in the stored data."""
    d, n = lay.data, int(np.prod(lay.shape))
    assert d is not None and lay.dtype is not None  # a checked layout (itk_read)
    if n == 0:
        return
    if buf is not None:
        data = np.frombuffer(buf, lay.dtype, count=n, offset=d.offset)
    else:
        data = np.memmap(d.file, lay.dtype, mode="r", offset=d.start + d.offset, shape=(n,))
    n_bad = n - int(np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise InputError(subject, given, f"{what} has {n_bad} NaN/Inf voxels")


def _nifti1_copy(lay: _Layout, dest: Path, voxels: bool, subject: str, given: Path, what: str) -> None:
    """A NIfTI-1 file (header, and the voxels when asked) with NIfTI-2 `lay`'s fields and data, which ITK
    reads (it has no NIfTI-2 reader): same voxels, same qform/sform, same reading rules."""
    import nibabel as nib

    if lay.data is None:
        raise InputError(subject, given, f"{what} is NIfTI-2 with an unknown data type (code "
                                         f"{int(lay.header['datatype'])}), which is not supported")
    if max(lay.shape) > 32767:
        raise InputError(subject, given, f"{what} is NIfTI-2 with size {lay.shape[::-1]}, over the 32767 voxels "
                                         "per axis of NIfTI-1, which is not supported")
    h1 = nib.Nifti1Header(endianness=lay.header.endianness)
    for key in _NIFTI2_FIELDS:
        h1[key] = lay.header[key]
    h1["magic"], h1["vox_offset"] = b"n+1", 352
    d = lay.data
    with open(dest, "wb") as out:
        out.write(h1.binaryblock + b"\0" * 4)
        if not voxels:
            return
        with open(d.file, "rb") as f, (gzip.GzipFile(fileobj=f, mode="rb") if d.codec == "gzip"
                                        else contextlib.nullcontext(f)) as src:
            f.seek(d.start + (d.offset if d.codec == "raw" else 0))
            if d.codec != "raw":
                src.read(d.offset)
            left = d.nbytes
            while left > 0 and (chunk := src.read(min(left, 1 << 22))):
                out.write(chunk)
                left -= len(chunk)


def itk_read(p: Path, subject: str, what: str, voxels: bool, check: bool = True):
    """ITK's reader on file p after the checks against its header: with voxels, the image; without, the reader
    after ReadImageInformation. ITK gets a stand-in in a temporary folder where it could not read the file
    itself: a symlink named .nii.gz to gzip NIfTI named otherwise, a NIfTI-1 copy of a NIfTI-2 file.
    Compressed MetaImage voxels are taken from the checked decompression, not from ITK (which half-reads a
    damaged stream). check=False (`read_raw`): only what reading needs."""
    lay = _layout(p, subject, what, check)
    buf = None
    if lay is not None and lay.data is not None:
        built = lay.kind == "meta" and lay.data.codec != "raw"
        finite = check and voxels and lay.kind in _NIFTI and lay.dtype is not None and lay.dtype.kind in "fc"
        if check or (built and voxels):
            buf = _check_data(lay, p, subject, what, decode=voxels,
                              keep=voxels and lay.data.codec != "raw" and (built or finite))
        if finite:
            _check_finite(lay, buf, subject, p, what)
        if not built:
            buf = None
    standin = None
    if lay is not None and lay.kind == "nifti2":
        standin = "image.nii"
    elif lay is not None and lay.kind == "nifti1" and lay.single:
        if lay.gz and not p.name.endswith(".nii.gz"):
            standin = "image.nii.gz"
        elif not lay.gz and not p.name.endswith((".nii", ".nii.gz")):
            standin = "image.nii"
    with tempfile.TemporaryDirectory(prefix="voxflow-read-") if standin else contextlib.nullcontext() as tmp:
        src = str(p)
        if standin:
            assert lay is not None and tmp is not None  # a stand-in is made for a known layout only
            src = os.path.join(tmp, standin)
            if lay.kind == "nifti2":
                _nifti1_copy(lay, Path(src), voxels, subject, p, what)
            else:
                os.symlink(p.resolve(), src)
        reader = sitk.ImageFileReader()
        reader.SetFileName(src)
        if not voxels or buf is not None:
            reader.ReadImageInformation()
        if not voxels:
            return reader
        if buf is None:
            return reader.Execute()
    assert lay is not None and lay.dtype is not None  # buf (decoded voxels) comes from a checked layout
    arr = np.frombuffer(buf, lay.dtype, count=int(np.prod(lay.shape))).reshape(lay.shape)
    img = sitk.GetImageFromArray(arr.astype(lay.dtype.newbyteorder("=")),
                                 isVector=len(lay.shape) > reader.GetDimension())
    img.SetSpacing(reader.GetSpacing())
    img.SetOrigin(reader.GetOrigin())
    img.SetDirection(reader.GetDirection())
    return img
