"""The desired side: container documents, the deletion guard, admission, the write path, views.

Everything here reads or writes desired state (and reads observed state to show it); none
of it talks to the engine or decides convergence.
"""
