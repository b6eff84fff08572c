"""``restorer_mnist_perceptual``: chapter 15's 4x super-resolution restorer trained with the L2 + 1.0 x the perceptual loss on the shipped classifier's conv features
(the recipe is shared with the other two restorers: course_lib/zoo/restorer_mnist.py)."""
from course_lib.zoo.record import register
from course_lib.zoo.restorer_mnist import record_for

RECORD = register(record_for("perceptual"))
