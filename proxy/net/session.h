/* net/session.h */
