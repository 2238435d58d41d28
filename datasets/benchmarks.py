"""The eleven benchmarks of the paper, declared as data: folder, class strings in label order, counts, sources."""

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

# One registered reader class per benchmark, named as DATASET.NAME, generated from the table.
for _spec in BENCHMARKS.values():
    DATASET_REGISTRY.register(type(_spec.name, (SplitJsonDataset,), {"spec": _spec}))


def spec_for(name: str) -> BenchmarkSpec:
    """Look up by DATASET.NAME or config name, case-insensitively (btmri, BTMRI, covid, COVID_19)."""
    key = name.lower()
    for spec in BENCHMARKS.values():
        if key in (spec.name.lower(), spec.config):
            return spec
    from engine.errors import UserError

    valid = ", ".join(f"{s.name} ({s.config})" for s in BENCHMARKS.values())
    raise UserError(f"Unknown benchmark '{name}'. Valid: {valid}.")
