class Model:  # placeholder while model.py is written
    pass
