"""ipywidgets (8) forms and views over Client and parse_model: RegisterForm, LaunchForm, ChatBox,
CompareView. A widget here is traits plus callbacks; what a button does is a Client or parse_model
call, and every action is also a method (``parse()``, ``register()``, ``launch()``, ``send()``,
``run()``) so notebooks and tests can drive them without clicking."""
from .chat import ChatBox, CompareView
from .launch import LaunchForm
from .register import RegisterForm

__all__ = ["ChatBox", "CompareView", "LaunchForm", "RegisterForm"]
