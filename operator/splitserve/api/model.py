"""Where a served model's weights come from, and how they are served."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, model_validator

from splitserve.api.base import DNS_SUBDOMAIN_PATTERN, ApiModel, cel, field

ABS_PATH_PATTERN = r"^/[^\x00]*$"


class PvcSource(ApiModel):
    """Weights on a PersistentVolumeClaim in the service's namespace."""

    claim_name: str = field("Name of the PersistentVolumeClaim.", min_length=1, max_length=253,
                            pattern=DNS_SUBDOMAIN_PATTERN)
    sub_path: str | None = field("Directory inside the volume holding config.json.", default=None,
                                 max_length=1024)


class ImageSource(ApiModel):
    """Weights baked into an image; copied into the pod by an init container."""

    reference: str = field("Image reference holding the weights.", min_length=1, max_length=512)
    path: str = field("Absolute directory inside that image holding config.json.",
                      min_length=2, max_length=1024, pattern=ABS_PATH_PATTERN)


class ModelSource(ApiModel):
    """Exactly one of pvc, hostPath or image."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "Where the weights are (Hugging Face layout: config.json, "
            "*.safetensors, tokenizer.json); exactly one of pvc, hostPath, image.",
            "x-kubernetes-validations": [
                cel(
                    "(has(self.pvc) ? 1 : 0) + (has(self.hostPath) ? 1 : 0) + "
                    "(has(self.image) ? 1 : 0) == 1",
                    "model.source must set exactly one of pvc, hostPath, image",
                )
            ],
        }
    )
    pvc: PvcSource | None = field("Weights on a PersistentVolumeClaim.", default=None)
    host_path: str | None = field(
        "Absolute directory on every node that may run a worker.", default=None, min_length=2,
        max_length=1024, pattern=ABS_PATH_PATTERN,
    )
    image: ImageSource | None = field("Weights inside an image.", default=None)

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [n for n in ("pvc", "host_path", "image") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "model.source must set exactly one of pvc, hostPath, image "
                f"(got {len(given)})"
            )
        return self


class Dtype(StrEnum):
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


class ModelSpec(ApiModel):
    """The served model."""

    model_config = ConfigDict(
        json_schema_extra={"description": "The model this service serves and its weights."}
    )
    name: str = field(
        "Name clients pass as `model` (listed by /v1/models).", min_length=1, max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
    )
    source: ModelSource = field("Where the weights are.")
    dtype: Dtype = field("Weight and activation dtype.", default=Dtype.BFLOAT16)
    max_context: int | None = field(
        "Longest prompt plus output in tokens; unset uses the model's config.json.",
        default=None, ge=16, le=1_048_576,
    )
