"""The eleven benchmarks of the paper, and the six domain-generalisation targets, declared as data: folder,
class strings in label order, counts, sources."""

from __future__ import annotations

from datasets.split_json import BenchmarkSpec, SplitJsonDataset
from engine.registry import DATASET_REGISTRY

BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec(
            "BTMRI", "btmri",
            ("glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"),
            "brain MRI", ".jpg", "1_lJLZRUmczqZqoN-dNqkAzGzmi4ONoU5",
            counts={"train": 2854, "val": 1141, "test": 1717},
        ),
        BenchmarkSpec(
            "BUSI", "busi", ("benign tumor", "malignant tumor", "normal scan"),
            "breast ultrasound", ".png", "1hB5M7wcAUTV9EtiYrijACoQ36R6VmQaa", has_base2new=False,
            counts={"train": 389, "val": 155, "test": 236},
        ),
        BenchmarkSpec(
            "CHMNIST", "chmnist",
            ("adipose tissue", "complex stroma", "debris", "empty background", "immune cells",
             "normal mucosal glands", "simple stroma", "tumour epithelium"),
            "colorectal histopathology", ".tif", "1tyQiYQmqAGNaY4SCK_8U5vEbbaa1AD-g",
            counts={"train": 2496, "val": 1000, "test": 1504},
        ),
        BenchmarkSpec(
            "COVID_19", "covid",
            ("covid lungs", "lung opacity lungs", "viral pneumonia lungs", "normal lungs"),
            "chest X-ray", ".png", "1zMLN5q5e_tmH-deSZQiY4Xq0M1EqCrML",
            counts={"train": 10582, "val": 4232, "test": 6351},
        ),
        BenchmarkSpec(
            "CTKidney", "ctkidney", ("cyst kidney", "kidney stone", "kidney tumor", "normal kidney"),
            "kidney CT", ".jpg", "1PBZ299k--mZL8JU7nhC1Wy8yEmlqmVDh",
            counts={"train": 6221, "val": 2487, "test": 3738},
        ),
        BenchmarkSpec(
            "DermaMNIST", "dermamnist",
            ("actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma",
             "melanoma", "melanocytic nevus", "vascular lesion"),
            "dermatoscopy", ".png", "1Jxd1-DWljunRDZ8fY80dl5zUMefriQXt",
            counts={"train": 7006, "val": 1003, "test": 2005},
        ),
        BenchmarkSpec(
            "KneeXray", "kneexray",
            ("healthy knee", "doubtful osteoarthritis", "minimal osteoarthritis",
             "moderate osteoarthritis", "severe osteoarthritis"),
            "knee X-ray", ".png", "1DBVraYJmxy2UcQ_nGLYvTB2reITOm453",
            counts={"train": 5778, "val": 826, "test": 1656},
        ),
        BenchmarkSpec(
            "Kvasir", "kvasir",
            ("dyed lifted polyps", "dyed resection margins", "esophagitis", "normal cecum",
             "normal pylorus", "normal z line", "polyps", "ulcerative colitis"),
            "gastrointestinal endoscopy", ".jpg", "1T_cqnNIjmGazNeg6gziarvCNWGsFEkRi",
            counts={"train": 2000, "val": 800, "test": 1200},
        ),
        BenchmarkSpec(
            "LungColon", "lungcolon",
            ("colon adenocarcinoma", "colon benign tissue", "lung adenocarcinoma", "lung benign tissue",
             "lung squamous cell carcinoma"),
            "lung and colon histopathology", ".jpeg", "1YIu5fqMXgyemisiL1L1HCvES2nVpCtun",
            counts={"train": 12500, "val": 5000, "test": 7500},
        ),
        BenchmarkSpec(
            "OCTMNIST", "octmnist",
            ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal OCT scan"),
            "retinal OCT", ".png", "1mYZNWxbPxnnVvcwHQYybA8gdMzQAoOem",
            counts={"train": 97476, "val": 10832, "test": 1000},
        ),
        BenchmarkSpec(
            "RETINA", "retina", ("diabetic retinopathy", "glaucoma", "cataract", "normal retina"),
            "colour fundus photography", ".jpg", "18U-Gc22h5QryomNNzY4r4Qfrq52yf5EO",
            counts={"train": 2108, "val": 841, "test": 1268},
        ),
    ]
}

# Domain-generalisation targets (the protocol of Evi-Steer, arXiv 2605.26292): the same classes as
# their source benchmark, imaged at other sites or on other scanners. A model trained on the source is
# tested on each target without retraining (docs/domain_generalization.md). Folders, split files and
# class strings follow the Evi-Steer release; the archives sit beside the benchmarks' on the
# BiomedCoOp HuggingFace dataset (no Google Drive copy). Their published image counts are not
# declared: Evi-Steer's table lists no val images, yet its UDIAT split file has a val list.
# The image extension is only what the synthetic twin writes.
_BRAIN = ("glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain")
_BREAST = ("benign tumor", "malignant tumor")
DG_TARGETS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in [
        BenchmarkSpec("BRISC", "brisc", _BRAIN, "brain MRI", ".jpg", has_base2new=False),
        BenchmarkSpec("BTMRI-P", "btmri_p", _BRAIN, "brain MRI", ".jpg", has_base2new=False),
        BenchmarkSpec("BTMRI-S", "btmri_s", _BRAIN, "brain MRI", ".jpg", has_base2new=False),
        BenchmarkSpec("BUID", "buid", _BREAST, "breast ultrasound", ".png", has_base2new=False),
        BenchmarkSpec("BUSBRA", "busbra", _BREAST, "breast ultrasound", ".png", has_base2new=False),
        BenchmarkSpec("UDIAT", "udiat", _BREAST, "breast ultrasound", ".png", has_base2new=False),
    ]
}
# target -> the benchmark it is the out-of-distribution test of (and whose prompt ensemble it reads)
DG_SOURCE = {"BRISC": "BTMRI", "BTMRI-P": "BTMRI", "BTMRI-S": "BTMRI", "BUID": "BUSI", "BUSBRA": "BUSI",
             "UDIAT": "BUSI"}
ALL_SPECS: dict[str, BenchmarkSpec] = {**BENCHMARKS, **DG_TARGETS}

# One registered reader class per benchmark, named as DATASET.NAME, generated from the table. A target
# names its source as `prompt_dataset`: engine/prompts.py reads the source's ensemble for it.
for _spec in ALL_SPECS.values():
    _extra = {"prompt_dataset": DG_SOURCE[_spec.name]} if _spec.name in DG_SOURCE else {}
    DATASET_REGISTRY.register(type(_spec.name, (SplitJsonDataset,), {"spec": _spec, **_extra}))


def spec_for(name: str) -> BenchmarkSpec:
    """Look up by DATASET.NAME or config name, case-insensitively (btmri, BTMRI, covid, COVID_19, btmri_p)."""
    key = name.lower()
    for spec in ALL_SPECS.values():
        if key in (spec.name.lower(), spec.config):
            return spec
    from engine.errors import UserError

    valid = ", ".join(f"{s.name} ({s.config})" for s in ALL_SPECS.values())
    raise UserError(f"Unknown benchmark '{name}'. Valid: {valid}.")


def dg_targets(source: str) -> list[str]:
    """The DATASET.NAMEs of the domain-generalisation targets of benchmark `source` (any spelling);
    none for any other name (the user's own dataset as a source names its targets itself)."""
    key = source.lower()
    name = next((s.name for s in ALL_SPECS.values() if key in (s.name.lower(), s.config)), None)
    return [target for target, src in DG_SOURCE.items() if src == name]
