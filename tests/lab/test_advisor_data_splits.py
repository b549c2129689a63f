"""The confirmation trains on the whole training split: a dataset without a validation split must load."""

import numpy as np

from dropkit.lab.data import load_dataset


def test_no_validation_split_takes_every_training_image(npz):
    data = load_dataset(npz, train_size=None, val_size=0)
    assert len(data.y_val) == 0 and len(data.y_train) == 90
    assert np.bincount(data.y_train.numpy()).tolist() == [30, 30, 30]
