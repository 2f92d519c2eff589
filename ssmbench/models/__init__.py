"""Models: sequence layers (registered in LAYERS by `model.kind`) and the shared deep backbone."""

from ssmbench.models.backbone import ModelIO, SequenceModel  # noqa: F401 (registers "s4d")
from ssmbench.models.s4d import S4D  # noqa: F401
from ssmbench.models.stu import ARSTU, STU  # noqa: F401 (registers "stu", "ar-stu")
