/* The floor of "run a program": exec, exit 0. */
int main(void) { return 0; }
