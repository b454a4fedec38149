"""Knowledge distillation: a student trained on a teacher's softened outputs."""

from keras_transfer.distillation.distill import Distill
from keras_transfer.distillation.distill import Distiller
from keras_transfer.distillation.distill import SoftenedDistillation
from keras_transfer.distillation.distill import compute_teacher_outputs
from keras_transfer.distillation.distill import load_teacher
