"""ArcGIS Pro Python raster function for camp-structure segmentation (inside best_model.dlpk).

ArcGIS ("Classify Pixels Using Deep Learning") loads this file by path and drives the class named
like the module: initialize -> getParameterInfo -> getConfiguration -> updateRasterInfo ->
updatePixels per block. It runs in ArcGIS Pro's own Python, which has no ``trainer`` package, so
it imports only numpy, torch and the standard library (json, os, math), and must work with
torch 2.0.1 (ArcGIS Pro 3.3-3.5).

Model contract (see model_card.json beside the .emd): input float32 [B, 3, T, T] =
(pixel / 255 - mean) / std, output float32 [B, 1, T, T] probability of "camp structure".
A pixel gets the class value where probability >= threshold, else 0.
"""

import json
import math
import os

import numpy as np
import torch


def _read_emd(model):
    """(emd dict, folder that relative paths are resolved against) from a path or a JSON string."""
    if os.path.isfile(model):
        with open(model, encoding="utf-8") as handle:
            return json.load(handle), os.path.dirname(os.path.abspath(model))
    try:
        emd = json.loads(model)
    except ValueError:
        raise ValueError(f"model must be the path of a .emd file or its JSON text, got {model[:200]!r}") from None
    # ArcGIS passes the JSON with absolute paths when the .emd came from an unpacked .dlpk;
    # otherwise relative paths are taken from the working folder.
    return emd, os.getcwd()


def _window_starts(length, window, step):
    """Start offsets of windows of ``window`` px every ``step`` px covering ``length`` px."""
    count = max(1, int(math.ceil((length - window) / float(step))) + 1)
    return [i * step for i in range(count)]


class CampSegmenter:
    def __init__(self):
        self.name = "Camp structure segmentation"
        self.description = "U-Net segmentation of camp structures (shelters, buildings) from RGB imagery"
        self.emd = {}
        self.model = None
        self.device = torch.device("cpu")
        self.padding = 0
        self.batch_size = 1
        self.threshold = 0.5
        self.input_range = None

    # ------------------------------------------------------------------ ArcGIS protocol

    def initialize(self, **kwargs):
        if "model" not in kwargs:
            return
        self.emd, folder = _read_emd(kwargs["model"])
        try:
            device = int(kwargs.get("device", -1))
        except (TypeError, ValueError):
            device = -1  # ArcGIS passes "" when no GPU is chosen
        if device >= 0 and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{device}")
        model_file = self.emd["ModelFile"]
        if not os.path.isabs(model_file):
            model_file = os.path.join(folder, model_file)
        self.model = torch.jit.load(model_file, map_location=self.device).eval()
        self.padding = int(self.emd.get("ModelPadding", 0))
        self.batch_size = int(self.emd.get("BatchSize", 1))
        self.threshold = float(self.emd.get("Threshold", 0.5))

    def getParameterInfo(self):
        return [
            {"name": "raster", "dataType": "raster", "required": True, "displayName": "Raster",
             "description": "Input RGB raster (8-bit, or 16-bit scaled by its statistics)"},
            {"name": "model", "dataType": "string", "required": True,
             "displayName": "Input Model Definition (EMD) File",
             "description": "The .emd file, or its JSON text"},
            {"name": "padding", "dataType": "numeric", "value": int(self.emd.get("ModelPadding", 0)),
             "required": False, "displayName": "Padding",
             "description": "Pixels of context on each side of a tile that are predicted but discarded"},
            {"name": "batch_size", "dataType": "numeric", "value": int(self.emd.get("BatchSize", 1)),
             "required": False, "displayName": "Batch Size",
             "description": "Model windows per inference call (one block holds this many)"},
            {"name": "threshold", "dataType": "numeric", "value": float(self.emd.get("Threshold", 0.5)),
             "required": False, "displayName": "Threshold",
             "description": "Probability at or above which a pixel is a camp structure (chosen on validation)"},
        ]

    def getConfiguration(self, **scalars):
        size_x, size_y = int(self.emd["ImageWidth"]), int(self.emd["ImageHeight"])
        self.padding = int(scalars.get("padding", self.padding))
        self.batch_size = max(1, int(scalars.get("batch_size", self.batch_size)))
        self.threshold = float(scalars.get("threshold", self.threshold))
        if not 0 <= 2 * self.padding < min(size_x, size_y):
            raise ValueError(f"padding must be from 0 to {(min(size_x, size_y) - 1) // 2} for "
                             f"{size_x}x{size_y} model tiles, got {self.padding}")
        # One block holds a rows x cols grid of model windows sharing their padding, so that a
        # block is exactly one batch (as arcgis.learn does); batch_size 1 gives tx = width - 2p.
        rows = max(1, int(math.floor(math.sqrt(self.batch_size))))
        cols = int(math.ceil(self.batch_size / float(rows)))
        return {
            "extractBands": tuple(self.emd.get("ExtractBands", (0, 1, 2))),
            "padding": self.padding,
            "tx": cols * (size_x - 2 * self.padding),
            "ty": rows * (size_y - 2 * self.padding),
            "fixedTileSize": 1,
            "dataRange": tuple(self.emd.get("DataRange", (0, 255))),
            "inheritProperties": 2 | 4 | 8,  # NoData, size and resampling; not the pixel type
            "inputMask": False,
        }

    def updateRasterInfo(self, **kwargs):
        self._remember_input_range(kwargs.get("raster_info") or {})
        values = [int(c["Value"]) for c in self.emd.get("Classes", [])] or [1]
        output = kwargs.setdefault("output_info", {})
        output["bandCount"] = 1
        output["pixelType"] = "u1"
        output["statistics"] = ({"minimum": 0.0, "maximum": float(max(values))},)
        output["histogram"] = ()
        output["rasterAttributeTable"] = json.dumps(self._attribute_table())
        return kwargs

    def updatePixels(self, tlc, shape, props, **pixelBlocks):
        pixels = np.asarray(pixelBlocks["raster_pixels"])
        probability = self.probability(pixels)
        classes = self.emd.get("Classes") or [{"Value": 1}]
        value = int(classes[-1]["Value"])
        mask = np.where(probability >= self.threshold, value, 0)
        pixelBlocks["output_pixels"] = mask.reshape(shape).astype(props["pixelType"], copy=False)
        return pixelBlocks

    # ------------------------------------------------------------------ model maths

    def probability(self, pixels):
        """Probabilities for the inner part of a (bands, H, W) block, shaped (H - 2p, W - 2p).

        The block is cut into model-sized windows overlapping by 2 * padding; each window keeps
        only its centre. Blocks of any size work: the bottom/right edge is reflected to fill
        the last windows.
        """
        x = self._normalise(self._select_bands(pixels))
        tile_h, tile_w = int(self.emd["ImageHeight"]), int(self.emd["ImageWidth"])
        pad = self.padding
        out_h, out_w = x.shape[1] - 2 * pad, x.shape[2] - 2 * pad
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"block {tuple(pixels.shape)} is too small for padding {pad}")
        ys = _window_starts(x.shape[1], tile_h, tile_h - 2 * pad)
        xs = _window_starts(x.shape[2], tile_w, tile_w - 2 * pad)
        need_h, need_w = ys[-1] + tile_h, xs[-1] + tile_w
        if need_h > x.shape[1] or need_w > x.shape[2]:
            extra = ((0, 0), (0, need_h - x.shape[1]), (0, need_w - x.shape[2]))
            mode = "reflect" if min(x.shape[1:]) > max(extra[1][1], extra[2][1]) else "edge"
            x = np.pad(x, extra, mode=mode)
        result = np.zeros((ys[-1] + tile_h - 2 * pad, xs[-1] + tile_w - 2 * pad), dtype=np.float32)
        corners = [(y, x0) for y in ys for x0 in xs]
        for start in range(0, len(corners), self.batch_size):
            chunk = corners[start:start + self.batch_size]
            batch = np.stack([x[:, y:y + tile_h, x0:x0 + tile_w] for y, x0 in chunk])
            with torch.no_grad():
                prob = self.model(torch.from_numpy(batch).to(self.device))[:, 0].float().cpu().numpy()
            for index, (y, x0) in enumerate(chunk):
                result[y:y + tile_h - 2 * pad, x0:x0 + tile_w - 2 * pad] = \
                    prob[index, pad:tile_h - pad, pad:tile_w - pad]
        return result[:out_h, :out_w]

    def _select_bands(self, pixels):
        """ArcGIS applies extractBands itself; a block with more bands (direct callers) is cut here."""
        bands = [int(b) for b in self.emd.get("ExtractBands", (0, 1, 2))]
        if pixels.ndim != 3:
            raise ValueError(f"raster_pixels must be (bands, rows, cols), got shape {pixels.shape}")
        if pixels.shape[0] == len(bands):
            return pixels
        if pixels.shape[0] > max(bands):
            return pixels[bands]
        raise ValueError(f"the model needs {len(bands)} bands (ExtractBands {bands}); "
                         f"the raster has {pixels.shape[0]}")

    def _normalise(self, pixels):
        """Pixels -> 0-1 scale (as the chips were in training) -> (x - mean) / std, float32.

        8-bit blocks are scaled by the EMD's DataRange (0-255). Wider sources (uint16 ...) are
        scaled by the raster's own range from updateRasterInfo, the same for every block (a
        per-block stretch would change brightness tile by tile).
        """
        if pixels.dtype == np.uint8 or self.input_range is None:
            low, high = [float(v) for v in self.emd.get("DataRange", (0, 255))]
        else:
            low, high = self.input_range
        unit = np.clip((pixels.astype(np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0)
        mean = np.asarray(self.emd["NormalizationMean"], dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.emd["NormalizationStd"], dtype=np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((unit - mean) / std, dtype=np.float32)

    def _remember_input_range(self, raster_info):
        """Source range for non-8-bit rasters: per-band statistics when ArcGIS has them, else the
        full range of the pixel type."""
        pixel_type = str(raster_info.get("pixelType", "u1"))
        if pixel_type in ("u1", "uint8"):
            self.input_range = None
            return
        stats = raster_info.get("statistics") or ()
        bands = [int(b) for b in self.emd.get("ExtractBands", (0, 1, 2))]
        # Statistics cover either the extracted bands only or every band of the source.
        picked = list(stats) if len(stats) == len(bands) else [stats[b] for b in bands if b < len(stats)]
        picked = [s for s in picked if s]
        if picked:
            self.input_range = (min(float(s["minimum"]) for s in picked),
                                max(float(s["maximum"]) for s in picked))
        elif pixel_type in ("u2", "uint16"):
            self.input_range = (0.0, 65535.0)
        else:
            self.input_range = None

    def _attribute_table(self):
        fields = [{"name": "OID", "type": "esriFieldTypeOID", "alias": "OID"},
                  {"name": "Value", "type": "esriFieldTypeInteger", "alias": "Value"},
                  {"name": "Class", "type": "esriFieldTypeString", "alias": "Class"},
                  {"name": "Red", "type": "esriFieldTypeInteger", "alias": "Red"},
                  {"name": "Green", "type": "esriFieldTypeInteger", "alias": "Green"},
                  {"name": "Blue", "type": "esriFieldTypeInteger", "alias": "Blue"}]
        features = [{"attributes": {"OID": i + 1, "Value": int(c["Value"]), "Class": c["Name"],
                                    "Red": c["Color"][0], "Green": c["Color"][1], "Blue": c["Color"][2]}}
                    for i, c in enumerate(self.emd.get("Classes", []))]
        return {"features": features, "fields": fields}
