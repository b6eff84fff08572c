"""``restorer_mnist_l2``: chapter 15's 4x super-resolution restorer trained with the L2 loss alone
(the recipe is shared with the other two restorers: course_lib/zoo/restorer_mnist.py)."""
from course_lib.zoo.record import register
from course_lib.zoo.restorer_mnist import record_for

RECORD = register(record_for("l2"))
