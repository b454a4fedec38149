"""Unsupervised domain adaptation: train on labelled source images and unlabelled
target images so the classifier works on the target domain.

`DANN` (a domain classifier through a `GradientReversal` layer) and `CORAL`
(`coral_loss`, covariance alignment of the features) are transfer methods
(`train(..., method=DANN(target=x_target))`, `--method dann:target=FOLDER`); both fit a
`DomainAdapter` on paired source and target batches and keep the plain classifier.
"""

from keras_transfer.adaptation.coral import CORAL
from keras_transfer.adaptation.coral import CORALLoss
from keras_transfer.adaptation.coral import coral_loss
from keras_transfer.adaptation.dann import DANN
from keras_transfer.adaptation.dann import DomainClassifierLoss
from keras_transfer.adaptation.domain import DomainAdapter
from keras_transfer.adaptation.domain import load_target
from keras_transfer.adaptation.gradient_reversal import GradientReversal
from keras_transfer.adaptation.gradient_reversal import GradientReversalSchedule
from keras_transfer.adaptation.gradient_reversal import dann_lambda
