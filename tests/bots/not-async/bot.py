def bot(runner_args):
    return None
