"""Meta-learned scores (000 §3.2, §5.2, appendix B): learn a per-weight score from the scores of other
criteria, with a reference ticket on the same initialisation as the target.

``table`` builds the per-weight table (features from ``features``), ``fit`` fits and persists the five
regressors of 000 §5.2.2 and reports R² and MSE, ``criterion`` makes a fitted model the criterion
``meta:<path>``. Submodules are imported on use: sklearn is only needed to fit or load sklearn models.
"""
