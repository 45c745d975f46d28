def add(a, b):
    return
